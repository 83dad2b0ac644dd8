"""Reports: HTML, JSON, CSV, JUnit and Markdown written into a run folder."""
