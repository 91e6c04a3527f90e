-- `webauthn.trust_device_for` (issue 10): after a hardware key approved an
-- SSH login, that device needs no touch until this time (its other factors
-- are still asked). NULL: never, or the window was not opened. Apart from
-- `is_trusted`, which a sysop or the user sets and which opens a rule's
-- lock; this one only stands in for the key, for a bounded time.
ALTER TABLE devices ADD COLUMN key_trusted_until INTEGER;
