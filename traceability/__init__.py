"""Production batches, signed trace URLs and QR codes, the public scan page and scan log."""
