//! V4L2 source (being written).
