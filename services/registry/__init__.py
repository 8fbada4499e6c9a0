"""Registry: org units and their hierarchy over time, data elements, data sets,
validation rules, focal points, users. The source of all metadata."""
