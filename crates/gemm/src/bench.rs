//! The matmul benchmark (being written).
