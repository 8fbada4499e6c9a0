"""Submission: takes returns (DHIS2 JSON, ADX XML, CSV), checks who may send what,
stores them durably and emits ``return_received``."""
