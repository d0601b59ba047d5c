//! The originating request of a channel, kept compact.
//!
//! A channel must be able to give its request back ([`crate::Channel::originating_request`])
//! for its whole life, but most never ask. An `http::HeaderMap` costs about 0.8 KiB for the
//! handful of headers of a typical request (its table is sized for growth, and every value
//! is an allocation of its own), a large share of an idle channel's memory. So the headers are
//! kept packed (the values in one buffer) and the `Parts` are built the first time they are
//! asked for.
//!
//! Packing also copies everything out of hyper's connection read buffer: hyper parses the URI
//! and header values as slices of it, and keeping those slices would keep that whole buffer
//! (16 KiB) alive for the channel's life.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

pub(crate) struct RequestHead {
    method: Method,
    version: Version,
    uri: Uri,
    /// Each header: its name, the range of its value in `values`, and whether it is sensitive.
    headers: Box<[(HeaderName, u32, u32, bool)]>,
    values: Bytes,
    /// The headers as they came, kept only if one of their values would not pass
    /// `HeaderValue`'s checks again (none that hyper parses should): nothing is lost.
    unpacked: Option<Box<HeaderMap>>,
    extensions: Extensions,
    parts: OnceLock<Box<Parts>>,
}

impl std::fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

impl RequestHead {
    pub(crate) fn new(parts: Parts) -> Self {
        if !parts.headers.values().all(|v| HeaderValue::from_bytes(v.as_bytes()).is_ok()) {
            return Self::unpacked(parts);
        }
        let total: usize = parts.headers.values().map(HeaderValue::len).sum();
        let mut values = BytesMut::with_capacity(total);
        let mut headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            let start = values.len() as u32;
            values.extend_from_slice(value.as_bytes());
            headers.push((name.clone(), start, values.len() as u32, value.is_sensitive()));
        }
        // A URI of our own (parsed again from its text: no slice of hyper's buffer).
        let uri = parts.uri.to_string().parse().unwrap_or(parts.uri);
        Self {
            method: parts.method,
            version: parts.version,
            uri,
            headers: headers.into_boxed_slice(),
            values: values.freeze(),
            unpacked: None,
            extensions: parts.extensions,
            parts: OnceLock::new(),
        }
    }

    fn unpacked(parts: Parts) -> Self {
        Self {
            method: parts.method,
            version: parts.version,
            uri: parts.uri.to_string().parse().unwrap_or(parts.uri),
            headers: Box::new([]),
            values: Bytes::new(),
            unpacked: Some(Box::new(parts.headers)),
            extensions: parts.extensions,
            parts: OnceLock::new(),
        }
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// The request's `Parts`, built on the first call.
    pub(crate) fn parts(&self) -> &Parts {
        self.parts.get_or_init(|| {
            let mut headers = self.unpacked.as_deref().cloned().unwrap_or_default();
            headers.reserve(self.headers.len());
            for (name, start, end, sensitive) in &*self.headers {
                let bytes = self.values.slice(*start as usize..*end as usize);
                // Checked when it was packed (see `new`).
                let Ok(mut value) = HeaderValue::from_maybe_shared(bytes) else { continue };
                value.set_sensitive(*sensitive);
                headers.append(name.clone(), value);
            }
            let (mut parts, ()) = Request::new(()).into_parts();
            parts.method = self.method.clone();
            parts.uri = self.uri.clone();
            parts.version = self.version;
            parts.headers = headers;
            parts.extensions = self.extensions.clone();
            Box::new(parts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_come_back_whole_and_own_their_bytes() {
        let mut value = HeaderValue::from_static("secret");
        value.set_sensitive(true);
        let request = Request::post("http://example.com/a/b?c=d")
            .version(Version::HTTP_11)
            .header("x-one", "1")
            .header("accept", "text/plain")
            .header("accept", "text/html")
            .header("authorization", value)
            .extension(7u32)
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let head = RequestHead::new(parts.clone());
        assert_eq!(head.method(), Method::POST);
        let back = head.parts();
        assert_eq!(back.method, parts.method);
        assert_eq!(back.uri, parts.uri);
        assert_eq!(back.version, parts.version);
        assert_eq!(back.headers, parts.headers);
        let accepts: Vec<_> = back.headers.get_all("accept").iter().collect();
        assert_eq!(accepts, ["text/plain", "text/html"]);
        assert!(back.headers["authorization"].is_sensitive());
        assert_eq!(back.extensions.get::<u32>(), Some(&7));
        // Built once.
        assert!(std::ptr::eq(back, head.parts()));
    }
}
