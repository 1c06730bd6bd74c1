"""Capture: turns form fills, downloads, webinars, tracking calls and ad leads into CloudEvents."""
