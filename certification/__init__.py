"""Products under the 湘西香伴 brand and their certification (认定): applications, county and
prefecture decisions, certificates, revocation, expiry, and the public catalogue (产品目录)."""
