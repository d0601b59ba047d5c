//! The callback API of Clojure's `immutant.web.async`, rebuilt on the Stream/Sink channel.
//!
//! (Work in progress.)
