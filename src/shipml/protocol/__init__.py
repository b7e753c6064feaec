"""Wire protocols of the dataplane, transport-free: bytes in, arrays out and back; nothing here knows HTTP.

- :mod:`shipml.protocol.v2`: the Open Inference Protocol v2 (KServe v2 / Triton HTTP/REST), with Triton's
  binary tensor data extension (tensor contents in :mod:`shipml.protocol.v2_tensor`).
"""
