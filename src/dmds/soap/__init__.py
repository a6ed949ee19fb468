"""SOAP text normaliser: the ``modify_text`` web service and its client.

``dmds.soap.service`` serves the operation (soapbar over a threaded stdlib WSGI
server) with the same contract as the original spyne ``ws-server.py``;
``dmds.soap.normaliser`` is the zeep-based client used by the command-line and
desktop clients.
"""
