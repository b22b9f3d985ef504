//! The family-neutral `Growth` view a streaming writer uses: for BERT, GPT-2 and a Llama it
//! lists exactly the grown model's tensors, produces each one with the family plan's values,
//! and gives the grown config.

use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::{
    Bert, BertConfig, Gpt2, Gpt2Config, Llama, LlamaConfig, LlamaKind, Model,
};
use bert2bert_expand::{GrowOptions, GrowPlan, Growth, LlamaPlan, LlamaTarget, MapKind, Target};
use ndarray::ArrayD;

/// Every tensor of `g`, produced through the trait into one reused buffer, as the writer does.
fn streamed(g: &dyn Growth) -> Vec<(String, ArrayD<f32>)> {
    let mut buf = vec![f32::NAN; g.max_tensor_len()];
    g.tensors()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            g.tensor_into(i, &mut buf[..n]).unwrap();
            let a = ArrayD::from_shape_vec(shape, buf[..n].to_vec()).unwrap();
            (name, a)
        })
        .collect()
}

/// The names of `tensors` are unique, every value finite, the largest tensor fills the buffer.
fn check_listing(g: &dyn Growth, tensors: &[(String, ArrayD<f32>)]) {
    let mut names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), tensors.len(), "duplicate tensor names");
    assert!(tensors.iter().all(|(_, a)| a.iter().all(|v| v.is_finite())));
    assert_eq!(
        tensors.iter().map(|(_, a)| a.len()).max().unwrap(),
        g.max_tensor_len()
    );
}

#[test]
fn bert_and_gpt2_plans_stream_their_grown_model_through_growth() {
    let bert = Model::Bert(Bert::random(
        &BertConfig::new(40, 16, 2, 2, 32, 16),
        Heads::MLM,
        Init::TEST,
        3,
    ));
    let gpt2 = Model::Gpt2(Gpt2::random(
        &Gpt2Config::new(40, 16, 2, 2, 16),
        Init::TEST,
        4,
    ));
    let target = Target {
        layers: 3,
        hidden: 24,
        heads: 3,
        intermediate: 64,
    };
    for (model, map) in [(&bert, MapKind::Balanced), (&gpt2, MapKind::Exact)] {
        let opts = GrowOptions {
            map,
            ..GrowOptions::default()
        };
        let plan = GrowPlan::new(model, &target, &opts).unwrap();
        let tensors = streamed(&plan);
        check_listing(&plan, &tensors);
        // Exactly the grown model's tensors, in its order, with the plan's values.
        let grown = plan.build();
        let expected: Vec<String> = grown.named_tensors().iter().map(|t| t.0.clone()).collect();
        let got: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(got, expected);
        for (i, (name, a)) in tensors.iter().enumerate() {
            assert_eq!(a, &plan.tensor(i), "{name}");
        }
        let cfg = Growth::config_json(&plan);
        let width = cfg.get("hidden_size").or_else(|| cfg.get("n_embd"));
        assert_eq!(width.and_then(|v| v.as_u64()), Some(24));
        assert_eq!(Growth::report(&plan), plan.report());
    }
}

#[test]
fn a_llama_plan_streams_its_grown_model_through_growth() {
    let src = Llama::random(
        &LlamaConfig::new(LlamaKind::Qwen3, 30, 16, 2, 4, 2, 4, 24, true),
        Init::TEST,
        7,
    );
    let target = LlamaTarget {
        layers: 3,
        hidden: 22,
        heads: 6,
        kv_heads: 2,
        intermediate: 30,
    };
    let opts = GrowOptions {
        map: MapKind::Exact,
        ..GrowOptions::default()
    };
    let plan = LlamaPlan::new(&src, &target, &opts).unwrap();
    let tensors = streamed(&plan);
    check_listing(&plan, &tensors);
    let names: Vec<&str> = plan.table().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        tensors.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        names
    );
    for (i, (name, a)) in tensors.iter().enumerate() {
        assert_eq!(a, &plan.tensor(i).unwrap(), "{name}");
    }
    // Qwen3 q/k norms are listed; the config is the grown one.
    assert!(names.iter().any(|n| n.ends_with("self_attn.q_norm.weight")));
    let cfg = Growth::config_json(&plan);
    assert_eq!(cfg.get("hidden_size").and_then(|v| v.as_u64()), Some(22));
    assert_eq!(
        cfg.get("num_key_value_heads").and_then(|v| v.as_u64()),
        Some(2)
    );
    assert_eq!(
        cfg.get("num_hidden_layers").and_then(|v| v.as_u64()),
        Some(3)
    );
}
