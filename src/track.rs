//! Face tracks across frames, best shots and embedding fusion (work in progress this session).

/// The most best shots a track keeps.
pub const MAX_BEST_SHOTS: usize = 8;
