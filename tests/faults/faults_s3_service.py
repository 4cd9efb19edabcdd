"""``python faults_s3_service.py``: a second S3 service in its own process (moto servers in one
process share their data). It prints its endpoint, and stops when its stdin closes."""

import sys

from moto.server import ThreadedMotoServer

if __name__ == "__main__":
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()
    server.stop()
