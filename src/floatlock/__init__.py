"""floatlock: a userspace NFSv3 server whose NLM/NSM state follows virtual server addresses."""

__version__ = "0.1.0"
