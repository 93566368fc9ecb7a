"""A listener whose accept queue is full, so new TCP connections stall in
SYN-SENT: the kernel drops their SYNs (Linux, tcp_abort_on_overflow=0) and
the client's connect() neither succeeds nor fails for tens of seconds.

Prints the port as {"port": N}; exits when stdin closes.
"""

import json
import socket
import sys
import time

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(0)
port = listener.getsockname()[1]
fillers = []
for _ in range(4):
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler.setblocking(False)
    try:
        filler.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    fillers.append(filler)
time.sleep(0.2)  # Let the fillers take the queue before anyone else connects.
sys.stdout.write(json.dumps({"port": port}) + "\n")
sys.stdout.flush()
sys.stdin.read()
