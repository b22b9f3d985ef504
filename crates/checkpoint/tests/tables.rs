//! The BERT and GPT-2 tensor tables: what `named_tensors` writes and `validate` checks is the
//! table, row for row, for the fixtures and for random models with and without optional parts.

use bert2bert_checkpoint::bert::{self, BertLayout};
use bert2bert_checkpoint::gpt2::{self, Gpt2Layout};
use bert2bert_checkpoint::random::{Heads, Init};
use bert2bert_checkpoint::safetensors::TensorStore;
use bert2bert_checkpoint::{Bert, BertConfig, Gpt2, Gpt2Config, Model, read_model_dir};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

/// (name, shape) of every tensor the model writes.
fn written(m: &Model) -> Vec<(String, Vec<usize>)> {
    m.named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect()
}

fn rows<R>(table: Vec<bert2bert_checkpoint::model::TensorDef<R>>) -> Vec<(String, Vec<usize>)> {
    table.into_iter().map(|d| (d.name, d.shape)).collect()
}

#[test]
fn fixture_tables_are_what_is_stored_and_written() {
    for name in ["hf-bert-tiny", "hf-gpt2-tiny"] {
        let dir = read_model_dir(&fixture(name)).unwrap();
        let table = match &dir.model {
            Model::Bert(b) => rows(bert::tensor_table(&b.config, b.layout())),
            Model::Gpt2(g) => rows(gpt2::tensor_table(&g.config, g.layout())),
        };
        assert_eq!(table, written(&dir.model), "{name}");
        // The table holds exactly the stored tensors the loader kept.
        let store = TensorStore::open_dir(&fixture(name)).unwrap();
        let dropped: Vec<&str> = dir.dropped.iter().map(|d| d.name.as_str()).collect();
        let mut stored: Vec<String> = store
            .names()
            .filter(|n| !dropped.contains(n))
            .map(|n| n.to_string())
            .collect();
        stored.sort();
        let mut names: Vec<String> = table.into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, stored, "{name}");
    }
}

#[test]
fn bert_table_follows_every_optional_part() {
    let cfg = BertConfig::new(50, 16, 2, 2, 32, 20);
    let none = Heads {
        mlm: false,
        pooler: false,
        nsp: false,
    };
    let mut untied = Bert::random(&cfg, Heads::MLM, Init::TEST, 3);
    untied.config.tie_word_embeddings = false;
    untied.mlm.as_mut().unwrap().decoder = Some(untied.embeddings.word.t().to_owned());
    let models = [
        Bert::random(&cfg, Heads::ALL, Init::TEST, 1),
        Bert::random(&cfg, Heads::MLM, Init::TEST, 2),
        Bert::random(&cfg, none, Init::TEST, 4),
        untied,
    ];
    for b in models {
        b.validate().unwrap();
        let layout = b.layout();
        let table = bert::tensor_table(&b.config, layout);
        assert_eq!(rows(table.clone()), written(&Model::Bert(b.clone())));
        for def in &table {
            let t = b.tensor(def.role).unwrap();
            assert_eq!(t.shape(), def.shape.as_slice(), "{}", def.name);
        }
        // Absent parts have no tensor.
        assert_eq!(
            b.tensor(bert::Role::Pooler(bert::Leaf::Weight)).is_some(),
            layout.pooler
        );
        assert_eq!(b.tensor(bert::Role::Decoder).is_some(), layout.decoder);
        assert_eq!(b.tensor(bert::Role::MlmBias).is_some(), layout.mlm);
        assert!(
            b.tensor(bert::Role::Layer(2, bert::Part::Query, bert::Leaf::Bias))
                .is_none()
        );
    }
}

#[test]
fn gpt2_table_follows_a_tied_or_untied_head() {
    for tied in [true, false] {
        let mut cfg = Gpt2Config::new(40, 16, 2, 2, 24);
        cfg.tie_word_embeddings = tied;
        let g = Gpt2::random(&cfg, Init::TEST, 5);
        g.validate().unwrap();
        assert_eq!(
            g.layout(),
            Gpt2Layout {
                prefixed: true,
                lm_head: !tied
            }
        );
        let table = gpt2::tensor_table(&g.config, g.layout());
        assert_eq!(rows(table.clone()), written(&Model::Gpt2(g.clone())));
        assert_eq!(table.last().unwrap().name == "lm_head.weight", !tied);
        assert_eq!(g.tensor(gpt2::Role::LmHead).is_some(), !tied);
    }
}

/// The names and order written before the tables existed, pinned: a writer change that
/// renames or reorders tensors fails here.
#[test]
fn names_and_order_are_pinned() {
    let cfg = BertConfig::new(50, 16, 1, 2, 32, 20);
    let all = BertLayout {
        prefixed: true,
        pooler: true,
        mlm: true,
        decoder: true,
        nsp: true,
    };
    let names: Vec<String> = bert::tensor_table(&cfg, all)
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut want: Vec<String> = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    ]
    .map(String::from)
    .to_vec();
    for m in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ] {
        for leaf in ["weight", "bias"] {
            want.push(format!("bert.encoder.layer.0.{m}.{leaf}"));
        }
    }
    want.extend(
        [
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "cls.predictions.transform.dense.weight",
            "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.LayerNorm.bias",
            "cls.predictions.bias",
            "cls.predictions.decoder.weight",
            "cls.seq_relationship.weight",
            "cls.seq_relationship.bias",
        ]
        .map(String::from),
    );
    assert_eq!(names, want);

    let cfg = Gpt2Config::new(40, 16, 1, 2, 24);
    let names: Vec<String> = gpt2::tensor_table(&cfg, Gpt2Layout::lm_head_model(true))
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut want = vec![
        "transformer.wte.weight".to_string(),
        "transformer.wpe.weight".into(),
    ];
    for m in [
        "ln_1",
        "attn.c_attn",
        "attn.c_proj",
        "ln_2",
        "mlp.c_fc",
        "mlp.c_proj",
    ] {
        for leaf in ["weight", "bias"] {
            want.push(format!("transformer.h.0.{m}.{leaf}"));
        }
    }
    want.extend(
        [
            "transformer.ln_f.weight",
            "transformer.ln_f.bias",
            "lm_head.weight",
        ]
        .map(String::from),
    );
    assert_eq!(names, want);
}

/// Writing a row through `tensor_mut` changes exactly what `tensor` (so the writer) reads
/// under that row's role, for every row.
#[test]
fn tensor_mut_writes_what_tensor_reads() {
    let cfg = BertConfig::new(30, 8, 2, 2, 16, 12);
    let mut b = Bert::random(&cfg, Heads::ALL, Init::TEST, 9);
    b.config.tie_word_embeddings = false;
    b.mlm.as_mut().unwrap().decoder = Some(b.embeddings.word.t().to_owned());
    for (i, def) in b.table().into_iter().enumerate() {
        let before = b.clone();
        let mut dst = b.tensor_mut(def.role).unwrap();
        assert_eq!(dst.shape(), def.shape.as_slice(), "{}", def.name);
        // A value no row holds, at the second element in Hugging Face order: [0, 1] of a
        // matrix, so a view in the held orientation ([1, 0]) would fail the read back.
        let marker = 1000.0 + i as f32;
        *dst.iter_mut().nth(1).unwrap() = marker;
        assert_eq!(b.tensor(def.role).unwrap().iter().nth(1), Some(&marker));
        let changed: Vec<String> = b
            .named_tensors()
            .into_iter()
            .zip(before.named_tensors())
            .filter(|((_, x), (_, y))| x != y)
            .map(|((n, _), _)| n)
            .collect();
        assert_eq!(changed, vec![def.name.clone()]);
        b = before;
    }

    let mut cfg = Gpt2Config::new(30, 8, 2, 2, 12);
    cfg.tie_word_embeddings = false;
    let mut g = Gpt2::random(&cfg, Init::TEST, 9);
    for (i, def) in g.table().into_iter().enumerate() {
        let before = g.clone();
        let mut dst = g.tensor_mut(def.role).unwrap();
        assert_eq!(dst.shape(), def.shape.as_slice(), "{}", def.name);
        let marker = 1000.0 + i as f32;
        *dst.iter_mut().nth(1).unwrap() = marker;
        let changed: Vec<String> = g
            .named_tensors()
            .into_iter()
            .zip(before.named_tensors())
            .filter(|((_, x), (_, y))| x != y)
            .map(|((n, _), _)| n)
            .collect();
        assert_eq!(changed, vec![def.name.clone()]);
        assert_eq!(g.tensor(def.role).unwrap().iter().nth(1), Some(&marker));
        g = before;
    }
}
