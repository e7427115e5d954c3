//! The HTTP/1.1 response parser of async operators' `http` import
//! (`weir_async::http::parse_response`): whatever a server sends back.
//!
//! The first byte picks the request method and the body limit
//! (`async.max-response`), the rest is the response. Checks beyond "no
//! panic": an accepted body is never larger than the limit, there are at
//! most 256 headers, and a `Content-Length` response is answered with
//! exactly that many bytes. libFuzzer's `-malloc_limit_mb` (set by
//! `fuzz/run`) catches a length field that allocates before it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_async::http::parse_response;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, response)) = data.split_first() else { return };
    let method = if pick & 1 == 0 { "GET" } else { "HEAD" };
    let max_body = [0usize, 16, 1 << 20, usize::MAX][(pick >> 1) as usize % 4];
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let mut conn = response;
    let Ok((resp, _reusable)) = rt.block_on(parse_response(&mut conn, method, max_body)) else { return };
    assert!(resp.body.len() <= max_body);
    assert!(resp.headers.len() <= 256);
    if method == "HEAD" {
        assert!(resp.body.is_empty());
    }
    let lengths: Vec<&str> = resp.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    let chunked = resp.headers.iter().any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if let [one] = lengths[..]
        && !chunked
        && method == "GET"
        && !(100..200).contains(&resp.status)
        && resp.status != 204
        && resp.status != 304
    {
        assert_eq!(one.parse::<usize>(), Ok(resp.body.len()), "Content-Length {one} answered with {} bytes", resp.body.len());
    }
});
