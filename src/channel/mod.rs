//! The request channel: one server, many clients (issue 3).
