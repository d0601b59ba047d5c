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
    /// The URI's text is the first `uri_len` bytes of `values`, parsed again when the parts
    /// are asked for: a `Uri` takes 88 bytes for the channel's life (before 2026-12-06).
    uri_len: u32,
    /// The URI itself, kept only if its text does not parse back to it (see `uri`).
    kept_uri: Option<Box<Uri>>,
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
            .field("uri", &String::from_utf8_lossy(&self.values[..self.uri_len as usize]))
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

impl RequestHead {
    pub(crate) fn new(parts: Parts) -> Self {
        if !parts.headers.values().all(|v| HeaderValue::from_bytes(v.as_bytes()).is_ok()) {
            return Self::unpacked(parts);
        }
        let (uri, kept_uri) = Self::uri(parts.uri);
        let total: usize = parts.headers.values().map(HeaderValue::len).sum();
        let mut values = BytesMut::with_capacity(uri.len() + total);
        values.extend_from_slice(uri.as_bytes());
        let mut headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            let start = values.len() as u32;
            values.extend_from_slice(value.as_bytes());
            headers.push((name.clone(), start, values.len() as u32, value.is_sensitive()));
        }
        Self {
            method: parts.method,
            version: parts.version,
            uri_len: uri.len() as u32,
            kept_uri,
            headers: headers.into_boxed_slice(),
            values: values.freeze(),
            unpacked: None,
            extensions: Self::extensions(parts.extensions),
            parts: OnceLock::new(),
        }
    }

    fn unpacked(parts: Parts) -> Self {
        let (uri, kept_uri) = Self::uri(parts.uri);
        Self {
            method: parts.method,
            version: parts.version,
            uri_len: uri.len() as u32,
            kept_uri,
            headers: Box::new([]),
            values: Bytes::from(uri),
            unpacked: Some(Box::new(parts.headers)),
            extensions: Self::extensions(parts.extensions),
            parts: OnceLock::new(),
        }
    }

    /// The URI's text (none of hyper's buffer is kept), and the `Uri` itself if that text
    /// does not parse back to it: too long for `Uri`'s parser, or `*` over HTTP/2 (`:path *`
    /// with an authority prints as `http://host*`, which parses as the host `host*` and the path
    /// `/`: a server-wide `OPTIONS *` came back as a request for `/` on another host, before
    /// 2026-12-06).
    fn uri(uri: Uri) -> (String, Option<Box<Uri>>) {
        let text = uri.to_string();
        let same = Uri::try_from(text.as_str()).is_ok_and(|back| back == uri);
        (text, (!same).then(|| Box::new(uri)))
    }

    /// The request's extensions; none at all when the map is empty. A WebSocket's request had
    /// hyper's upgrade handle taken out of it (see `as_channel`), which left an empty map
    /// holding its table, ~180 bytes per idle WebSocket (before 2026-12-06).
    fn extensions(extensions: Extensions) -> Extensions {
        if extensions.is_empty() {
            Extensions::new()
        } else {
            extensions
        }
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// The values of the header `name`, in order, without building the `Parts`.
    pub(crate) fn values_of<'a>(
        &'a self,
        name: &'a http::header::HeaderName,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let unpacked = self
            .unpacked
            .iter()
            .flat_map(move |h| h.get_all(name).iter().map(HeaderValue::as_bytes));
        let packed = self
            .headers
            .iter()
            .filter(move |(n, ..)| n == name)
            .map(|(_, start, end, _)| &self.values[*start as usize..*end as usize]);
        unpacked.chain(packed)
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
            parts.uri = match &self.kept_uri {
                Some(uri) => Uri::clone(uri),
                // It parsed back to the same when it was packed (see `uri`).
                None => Uri::from_maybe_shared(self.values.slice(..self.uri_len as usize))
                    .unwrap_or_default(),
            };
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

    #[test]
    fn the_uri_comes_back_in_every_form() {
        for uri in ["/", "/a/b?c=d&e", "*", "example.com:443", "https://example.com/x?y"] {
            let request = Request::get(uri).body(()).unwrap();
            let (parts, ()) = request.into_parts();
            let head = RequestHead::new(parts.clone());
            assert_eq!(head.parts().uri, parts.uri, "{uri}");
            assert!(format!("{head:?}").contains(&format!("{:?}", parts.uri.to_string())));
            assert!(head.kept_uri.is_none(), "{uri} was kept whole");
        }
        // `:path *` over HTTP/2, as hyper builds it: its text does not parse back to it.
        let star = Uri::builder()
            .scheme("http")
            .authority("127.0.0.1:8080")
            .path_and_query("*")
            .build()
            .unwrap();
        let request = Request::options(star.clone()).body(()).unwrap();
        let head = RequestHead::new(request.into_parts().0);
        assert_eq!(head.parts().uri, star);
        assert_eq!(head.parts().uri.path(), "*");
    }
}
