package sandbox

import (
	"errors"
	"fmt"
)

// Error classes. Every error the Manager returns wraps exactly one of them;
// the tools layer maps each class to a result in one place.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	ErrInternal           = errors.New("internal error")
)

// ErrNotInBox marks an ErrNotFound about a file or program missing inside
// the box (not a missing box): errors.Is(err, ErrNotInBox). It is no class
// of its own.
var ErrNotInBox = errors.New("no such file or program in the box")

// Error carries a message fit for the user (no host paths, no C return
// codes) separately from the internal cause, which goes to the logs.
type Error struct {
	Class error  // one of the Err* classes
	Msg   string // public message
	Err   error  // internal cause; may be nil
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap lets errors.Is match both the class and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Class}
	}
	return []error{e.Class, e.Err}
}

// Errorf builds an *Error with a public message and no internal cause.
func Errorf(class error, format string, args ...any) error {
	return &Error{Class: class, Msg: fmt.Sprintf(format, args...)}
}

// Wrapf builds an *Error with a public message and an internal cause.
func Wrapf(class, cause error, format string, args ...any) error {
	return &Error{Class: class, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// PublicMessage returns the user-facing message of err: the Msg of the
// outermost *Error, or a generic line for errors without one.
func PublicMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return "internal error (see the server log)"
}

// Class returns the class err belongs to, ErrInternal if none.
func Class(err error) error {
	for _, c := range []error{ErrNotFound, ErrAlreadyExists, ErrInvalidArgument, ErrFailedPrecondition,
		ErrUnavailable, ErrResourceExhausted, ErrDeadlineExceeded} {
		if errors.Is(err, c) {
			return c
		}
	}
	return ErrInternal
}
