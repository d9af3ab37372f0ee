"""`emokit evaluate`: metrics of a generated talking-head video against a real one."""
