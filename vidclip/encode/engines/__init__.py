"""The encode engines, each behind :class:`vidclip.encode.protocol.Engine`: ``local`` (decode
worker processes here, encoding in this process) and ``ray`` (a Ray cluster; the only module
importing Ray). :func:`vidclip.encode.pipeline.start_engine` picks one from the options."""
