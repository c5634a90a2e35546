//! Chat backends.
