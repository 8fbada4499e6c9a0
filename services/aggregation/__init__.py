"""Aggregation: rolls accepted values up the hierarchy and through time, tracks
completeness and timeliness, serves analytics and SDMX exports."""
