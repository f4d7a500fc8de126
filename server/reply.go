package server

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Replies turns decisions into the words the MTA sees.
type Replies struct {
	action string
	text   template
	header template
	host   string
	ver    string
}

// ReplyOptions configure Replies.
type ReplyOptions struct {
	// Action is the policy action for a defer: DEFER_IF_PERMIT (default:
	// Postfix defers only if no later restriction rejects, so spam that
	// would be rejected anyway is not invited back), DEFER, or an SMTP code
	// such as 450 or 451.
	Action string
	// Text follows the action. %s is the seconds left, %t the time left as
	// "4m59s", %r the recipient's domain, %% a percent sign.
	Text string
	// Header is the header added on a triplet's first pass, "" for none.
	// As postgrey's: %t the seconds it was delayed, %v the version, %h the
	// host name, %d the date (RFC 5322), %% a percent sign.
	Header  string
	Host    string
	Version string
}

// Defaults for ReplyOptions. Postfix sends DEFER_IF_PERMIT as a 450 with
// the enhanced status code the text starts with.
const (
	DefaultAction = "DEFER_IF_PERMIT"
	DefaultText   = "4.7.1 Greylisted, please retry in %t"
	DefaultHeader = "X-Greylist: delayed %t seconds by greyhold-%v at %h; %d"
)

// template is a parsed reply template: literal pieces and placeholders.
type template []piece

type piece struct {
	lit string
	ph  byte // 0 for a literal
}

func parseTemplate(s, allowed string) (template, error) {
	var t template
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' || c == '\r' {
			return nil, errors.New("contains a line break, which would end the reply")
		}
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		if i+1 == len(s) {
			return nil, errors.New("ends in a lone %")
		}
		i++
		if s[i] == '%' {
			lit.WriteByte('%')
			continue
		}
		if !strings.ContainsRune(allowed, rune(s[i])) {
			return nil, fmt.Errorf("unknown placeholder %%%c (known: %s)", s[i], placeholderList(allowed))
		}
		if lit.Len() > 0 {
			t = append(t, piece{lit: lit.String()})
			lit.Reset()
		}
		t = append(t, piece{ph: s[i]})
	}
	if lit.Len() > 0 {
		t = append(t, piece{lit: lit.String()})
	}
	return t, nil
}

func placeholderList(allowed string) string {
	var out []string
	for _, c := range allowed {
		out = append(out, "%"+string(c))
	}
	return strings.Join(out, " ")
}

// NewReplies checks and parses the templates.
func NewReplies(o ReplyOptions) (*Replies, error) {
	if o.Action == "" {
		o.Action = DefaultAction
	}
	if strings.ContainsAny(o.Action, " \r\n") {
		return nil, fmt.Errorf("greylist action %q: one word, such as DEFER_IF_PERMIT, DEFER or 450", o.Action)
	}
	if c, err := strconv.Atoi(o.Action); err == nil && (c < 400 || c > 499) {
		return nil, fmt.Errorf("greylist action %q: an SMTP code must be a 4xx, or mail would bounce", o.Action)
	}
	text, err := parseTemplate(o.Text, "str")
	if err != nil {
		return nil, fmt.Errorf("greylist text %q: %w", o.Text, err)
	}
	r := &Replies{action: o.Action, text: text, host: o.Host, ver: o.Version}
	if o.Header != "" {
		h, err := parseTemplate(o.Header, "tvhd")
		if err != nil {
			return nil, fmt.Errorf("x-greylist header %q: %w", o.Header, err)
		}
		if name, _, ok := strings.Cut(o.Header, ":"); !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("x-greylist header %q: want \"Name: value\"", o.Header)
		}
		r.header = h
	}
	return r, nil
}

// appendText appends the defer text for a recipient with left seconds to go.
func (r *Replies) appendText(dst []byte, left uint32, recipient string) []byte {
	for _, p := range r.text {
		switch p.ph {
		case 0:
			dst = append(dst, p.lit...)
		case 's':
			dst = strconv.AppendUint(dst, uint64(left), 10)
		case 't':
			dst = appendHuman(dst, left)
		case 'r':
			if at := strings.LastIndexByte(recipient, '@'); at >= 0 {
				dst = append(dst, recipient[at+1:]...)
			}
		}
	}
	return dst
}

// appendDefer appends "ACTION text" (no "action=", no newline).
func (r *Replies) appendDefer(dst []byte, left uint32, recipient string) []byte {
	dst = append(dst, r.action...)
	if len(r.text) > 0 {
		dst = append(dst, ' ')
		dst = r.appendText(dst, left, recipient)
	}
	return dst
}

// appendHeader appends the X-Greylist header line, or reports false when
// headers are off.
func (r *Replies) appendHeader(dst []byte, delayed uint32, now time.Time) ([]byte, bool) {
	if r.header == nil {
		return dst, false
	}
	for _, p := range r.header {
		switch p.ph {
		case 0:
			dst = append(dst, p.lit...)
		case 't':
			dst = strconv.AppendUint(dst, uint64(delayed), 10)
		case 'v':
			dst = append(dst, r.ver...)
		case 'h':
			dst = append(dst, r.host...)
		case 'd':
			dst = now.AppendFormat(dst, time.RFC1123Z)
		}
	}
	return dst, true
}

// appendHuman writes seconds the way mail admins read them: 4m59s, 5m, 1h2m.
func appendHuman(dst []byte, s uint32) []byte {
	if s == 0 {
		return append(dst, "0s"...)
	}
	h, m, sec := s/3600, s/60%60, s%60
	if h > 0 {
		dst = strconv.AppendUint(dst, uint64(h), 10)
		dst = append(dst, 'h')
	}
	if m > 0 {
		dst = strconv.AppendUint(dst, uint64(m), 10)
		dst = append(dst, 'm')
	}
	if sec > 0 {
		dst = strconv.AppendUint(dst, uint64(sec), 10)
		dst = append(dst, 's')
	}
	return dst
}
