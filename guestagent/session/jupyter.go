package session

// The Jupyter messaging protocol v5, as much as driving a kernel needs:
// https://jupyter-client.readthedocs.io/en/stable/messaging.html

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

const (
	jupyterDelim   = "<IDS|MSG>"
	jupyterVersion = "5.3"
)

// jheader is a message header.
type jheader struct {
	MsgID    string `json:"msg_id"`
	Session  string `json:"session"`
	Username string `json:"username"`
	Date     string `json:"date"`
	MsgType  string `json:"msg_type"`
	Version  string `json:"version"`
}

// jmsg is a decoded message.
type jmsg struct {
	Header  jheader
	Parent  jheader
	Content json.RawMessage
}

// signer signs and checks messages with the kernel's key.
type signer struct {
	key     []byte
	session string
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *signer) sign(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		m.Write(p)
	}
	return []byte(hex.EncodeToString(m.Sum(nil)))
}

// encode builds the frames of a new message of msgType; it returns them
// and the message id.
func (s *signer) encode(msgType string, content any) ([][]byte, string, error) {
	h := jheader{MsgID: newID(), Session: s.session, Username: "boxlite", Date: time.Now().UTC().Format(time.RFC3339Nano), MsgType: msgType, Version: jupyterVersion}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, "", err
	}
	cb, err := json.Marshal(content)
	if err != nil {
		return nil, "", err
	}
	parent, meta := []byte("{}"), []byte("{}")
	return [][]byte{[]byte(jupyterDelim), s.sign(hb, parent, meta, cb), hb, parent, meta, cb}, h.MsgID, nil
}

var errBadSignature = errors.New("jupyter: bad message signature")

// decode parses a message's frames (routing identities or a topic may come
// before the delimiter) and checks its signature.
func (s *signer) decode(frames [][]byte) (*jmsg, error) {
	i := 0
	for i < len(frames) && string(frames[i]) != jupyterDelim {
		i++
	}
	if len(frames)-i < 6 {
		return nil, fmt.Errorf("jupyter: message of %d frames without the delimiter and 5 parts", len(frames))
	}
	f := frames[i+1:]
	if !hmac.Equal(f[0], s.sign(f[1], f[2], f[3], f[4])) {
		return nil, errBadSignature
	}
	m := &jmsg{Content: f[4]}
	if err := json.Unmarshal(f[1], &m.Header); err != nil {
		return nil, fmt.Errorf("jupyter: header: %w", err)
	}
	if len(bytes.TrimSpace(f[2])) > 2 {
		if err := json.Unmarshal(f[2], &m.Parent); err != nil {
			return nil, fmt.Errorf("jupyter: parent header: %w", err)
		}
	}
	return m, nil
}

// Message contents the driver uses.
type (
	executeRequest struct {
		Code            string         `json:"code"`
		Silent          bool           `json:"silent"`
		StoreHistory    bool           `json:"store_history"`
		UserExpressions map[string]any `json:"user_expressions"`
		AllowStdin      bool           `json:"allow_stdin"`
		StopOnError     bool           `json:"stop_on_error"`
	}
	executeReply struct {
		Status         string `json:"status"`
		ExecutionCount int    `json:"execution_count"`
	}
	streamContent struct {
		Name string `json:"name"`
		Text string `json:"text"`
	}
	displayContent struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	errorContent struct {
		Ename     string   `json:"ename"`
		Evalue    string   `json:"evalue"`
		Traceback []string `json:"traceback"`
	}
	statusContent struct {
		ExecutionState string `json:"execution_state"`
	}
)

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// stripANSI removes terminal colour codes (IPython colours tracebacks).
func stripANSI(s string) string { return ansiRE.ReplaceAllString(s, "") }

// clipText cuts s to at most n bytes on a rune boundary, saying so.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut < len(s) && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "\n… (cut at " + fmt.Sprint(n) + " bytes)"
}

// mimeData decodes one representation of a mime bundle: JSON strings for
// text types (joined when a list of lines), base64 for binary ones, any
// other JSON value as its encoding (application/json).
func mimeData(mime string, raw json.RawMessage) ([]byte, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var lines []string
		if err := json.Unmarshal(raw, &lines); err == nil {
			s = strings.Join(lines, "")
		} else {
			return bytes.TrimSpace(raw), true // a JSON value (application/json, vnd.*+json)
		}
	}
	if isBinaryMime(mime) {
		b, err := decodeBase64(s)
		return b, err == nil
	}
	return []byte(s), true
}

// isBinaryMime says the Jupyter bundle carries mime as base64.
func isBinaryMime(mime string) bool {
	if mime == "image/svg+xml" {
		return false
	}
	return strings.HasPrefix(mime, "image/") || strings.HasPrefix(mime, "audio/") || strings.HasPrefix(mime, "video/") || mime == "application/pdf"
}
