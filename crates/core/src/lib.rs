//! # ferrogpt-core: ops and the autodiff tape
pub mod fsutil;
