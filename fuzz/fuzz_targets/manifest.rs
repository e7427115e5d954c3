//! Checkpoint manifests, `_manifest.json` (`Manifest::decode`, which
//! every restore and `weir checkpoints` run first).
//!
//! Checks beyond "no panic": a manifest that decodes re-encodes to JSON
//! that decodes to the same manifest, and every file it lists has a name
//! that stays inside the checkpoint directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_checkpoint::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data) else { return };
    for f in &m.files {
        let name = std::path::Path::new(&f.name);
        assert!(
            name.components().count() == 1 && matches!(name.components().next(), Some(std::path::Component::Normal(_))),
            "accepted file name {:?} leaves the checkpoint directory",
            f.name
        );
    }
    let again = Manifest::decode(&m.encode()).expect("an encoded manifest decodes");
    assert_eq!(again, m, "a manifest changed through encode and decode");
});
