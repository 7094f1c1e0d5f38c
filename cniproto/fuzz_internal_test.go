package cniproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadResponse: the plugin's hand-written HTTP reader never panics and never returns
// a body over MaxBody, whatever coild (or something else on the socket) sends.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}\n",
		"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n{\"code\":11,\"msg\":\"later\"}",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\n{}",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
		"garbage\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		status, body, err := readResponse(bufio.NewReaderSize(bytes.NewReader(reply), 4096))
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error that is neither a protocol error nor an early EOF: %v", err)
			}
			return
		}
		if status < 200 || status > 999 || len(body) > MaxBody || len(body) > len(reply) {
			t.Fatalf("status %d, body of %d bytes from a reply of %d", status, len(body), len(reply))
		}
	})
}
