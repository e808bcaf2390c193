//! GStreamer source (being written).
