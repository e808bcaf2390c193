//! Frame sources. Today: image files and folders of images ([`images`]); cameras (V4L2,
//! GStreamer) join here behind a common `FrameSource` trait with the streaming pipeline.

pub mod images;
