"""A small Django app for tether's backend tests: one model, its migration, two views."""
