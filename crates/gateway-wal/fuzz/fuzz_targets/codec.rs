//! Fuzzes the batch decoder: arbitrary bytes decode to a batch or an error,
//! never a panic, and whatever decodes re-encodes to bytes that decode to the
//! same batch.
#![no_main]

use gateway_model::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = codec::decode_batch(data) {
        let mut again = Vec::new();
        codec::encode_batch(&batch, &mut again);
        let back = codec::decode_batch(&again).expect("re-encoded batch decodes");
        assert!(back.same(&batch));
    }
});
