"""The local demo deployment: simulated Quay sites on real S3 servers, and trafficd.

Outside the pipeline: `python -m trafficd.demo` (see __main__.py) starts two
moto S3 servers, two simulated Quay sites (site.py, whose health follows their
own bucket), and `trafficd run` with the command actuator (sitectl.py), then
breaks one site's storage and repairs it while printing what trafficd decides.
The end-to-end test reuses site.py and sitectl.py. Needs the `demo` extra
(moto's server, boto3): `pip install '.[demo]'`.
"""
