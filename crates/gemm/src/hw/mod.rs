//! Hardware detection (being written).
