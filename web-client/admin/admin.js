// The operator dashboard (written next).
