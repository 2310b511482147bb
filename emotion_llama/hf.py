"""How every Hugging Face model of this project is read: from a local folder, with the plain torch layers.

transformers >= 5.25 kernelizes each model it loads by default (``use_kernels``): layers are swapped for
kernels fetched from the hub, code downloaded at run time, and ``from_pretrained(device_map="meta")`` fails
("Unsupported device type 'meta'"). The weights here are local and the layers are the library's own, on every
device, so each ``from_pretrained`` of a transformers model passes these keywords.
"""

LOCAL_PLAIN = {"local_files_only": True, "use_kernels": False}
