"""The bundled sample data: a seeded generator of transactions in the AWS RFM guidance's CSV format.

Imports only ``steps.errors``; nothing in the pipeline imports it except the ``rfm sample`` command and tests.
"""
