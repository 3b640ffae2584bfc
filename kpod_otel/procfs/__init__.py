"""Parsers of /proc and /sys files (mountinfo, net/dev, block device uevent)."""
