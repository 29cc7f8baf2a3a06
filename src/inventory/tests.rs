//! Unit tests of the inventory model.
