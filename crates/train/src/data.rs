//! MLM data: the bundled corpus, the tokenizer, packed and masked batches.
