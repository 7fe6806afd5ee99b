"""The teacher-target cache: format (format.py), what it was made for (fingerprint.py), the typed meta.json
(meta.py), the reader the student stage uses (reader.py), the precompute job (job.py, writer.py) and its
verification (verify.py). `python -m dataprep.targets` is the command line."""
