package pb

// PeerCode returns code if a client may answer a peer's request with it,
// else CODE_HANDLER_ERROR: a client may not pretend to be the node (say,
// that the node is shutting down, or that the peer is gone).
func PeerCode(code Code) Code {
	switch code {
	case Code_CODE_OK, Code_CODE_HANDLER_ERROR, Code_CODE_INVALID_ARGUMENT, Code_CODE_DEADLINE_EXCEEDED,
		Code_CODE_CANCELED, Code_CODE_UNKNOWN_COMMAND, Code_CODE_INTERNAL, Code_CODE_TOO_LARGE:
		return code
	}
	return Code_CODE_HANDLER_ERROR
}
