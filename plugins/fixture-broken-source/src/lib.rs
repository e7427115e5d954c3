//! Test fixture: a source written as a plugin (world `weir:plugin/source`)
//! that opens with any `config`, restores any position, and fails its
//! first `poll` with an error of its own: the bad new version a hot reload
//! swaps in, which its probation must catch so that the restart runs the
//! last good version.

use weir_sdk_source::{BatchWriter, Error, Info, Poll, Source};

/// The source.
#[derive(Debug)]
pub struct Broken;

impl Source for Broken {
    type Config = serde_json::Value;

    fn open(_config: serde_json::Value, _info: &Info) -> Result<Self, Error> {
        Ok(Broken)
    }

    fn restore(&mut self, _positions: Vec<Vec<u8>>) -> Result<(), Error> {
        Ok(())
    }

    fn poll(&mut self, _out: &mut BatchWriter, _max_bytes: usize) -> Result<Poll, Error> {
        Err(Error::user("fixture: this version is broken (fixture-broken-source)"))
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
}

weir_sdk_source::export_source!(Broken);
