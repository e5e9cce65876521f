//! The Reader-owned, resizable buffer pool (issue 4).
