package clientapi

import (
	"net/http"

	"maunium.net/go/mautrix"
)

// Error codes the spec defines that mautrix has no constant for.
var (
	errMissingParam    = mautrix.RespError{ErrCode: "M_MISSING_PARAM", StatusCode: http.StatusBadRequest}
	errWeakPassword    = mautrix.RespError{ErrCode: "M_WEAK_PASSWORD", StatusCode: http.StatusBadRequest}
	errProfileTooBig   = mautrix.RespError{ErrCode: "M_PROFILE_TOO_LARGE", StatusCode: http.StatusBadRequest}
	errKeyTooLarge     = mautrix.RespError{ErrCode: "M_KEY_TOO_LARGE", StatusCode: http.StatusBadRequest}
	errUserDeactivated = mautrix.MUserDeactivated.WithStatus(http.StatusForbidden)
)
