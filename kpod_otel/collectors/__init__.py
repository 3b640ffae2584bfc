"""Collectors: each reads one family of kernel sources once per cycle into a CollectorSnapshot."""
