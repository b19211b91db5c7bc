//! Command line (written next).
