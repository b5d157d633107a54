package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/push"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerPushRules mounts /pushrules (spec: "Push Rules: API"). The
// server-default rules come from package push; what a user changes is
// stored, and every change also rewrites their m.push_rules account data,
// which their clients' next /sync carries.
func (a *API) registerPushRules(g gin.IRouter) {
	g.GET("/pushrules/", a.authed(a.getPushRules))
	g.GET("/pushrules", a.authed(a.getPushRules))
	g.GET("/pushrules/global/", a.authed(a.getGlobalPushRules))
	g.GET("/pushrules/global", a.authed(a.getGlobalPushRules))
	// Not in the spec any more, but Synapse serves it and older clients use it.
	g.GET("/pushrules/global/:kind/", a.authed(a.getPushRulesOfKind))
	g.GET("/pushrules/global/:kind", a.authed(a.getPushRulesOfKind))

	rule := "/pushrules/global/:kind/:ruleId"
	g.GET(rule, a.authed(a.getPushRule))
	g.PUT(rule, a.authed(a.putPushRule))
	g.DELETE(rule, a.authed(a.deletePushRule))
	g.GET(rule+"/enabled", a.authed(a.getPushRuleEnabled))
	g.PUT(rule+"/enabled", a.authed(a.putPushRuleEnabled))
	g.GET(rule+"/actions", a.authed(a.getPushRuleActions))
	g.PUT(rule+"/actions", a.authed(a.putPushRuleActions))
}

// userRuleset assembles the caller's push rules.
func (a *API) userRuleset(c *gin.Context, sess *storage.Session) (*push.Ruleset, bool) {
	rows, err := a.db.PushRules(c.Request.Context(), sess.UserID)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	return push.Assemble(sess.UserID, rows), true
}

func (a *API) getPushRules(c *gin.Context, sess *storage.Session) {
	if rs, ok := a.userRuleset(c, sess); ok {
		c.JSON(http.StatusOK, gin.H{"global": rs})
	}
}

func (a *API) getGlobalPushRules(c *gin.Context, sess *storage.Session) {
	if rs, ok := a.userRuleset(c, sess); ok {
		c.JSON(http.StatusOK, rs)
	}
}

// kindParam reads the path's rule kind.
func kindParam(c *gin.Context) (push.Kind, bool) {
	k := push.Kind(c.Param("kind"))
	if !push.ValidKind(k) {
		fail(c, mautrix.MInvalidParam.WithMessage("Unknown push rule kind %q: it must be override, content, room, sender or underride", string(k)))
		return "", false
	}
	return k, true
}

func (a *API) getPushRulesOfKind(c *gin.Context, sess *storage.Session) {
	k, ok := kindParam(c)
	if !ok {
		return
	}
	if rs, ok := a.userRuleset(c, sess); ok {
		c.JSON(http.StatusOK, rs.Of(k))
	}
}

// findPushRule returns the path's rule, or answers 404.
func (a *API) findPushRule(c *gin.Context, sess *storage.Session) (*push.Rule, bool) {
	k, ok := kindParam(c)
	if !ok {
		return nil, false
	}
	rs, ok := a.userRuleset(c, sess)
	if !ok {
		return nil, false
	}
	r := rs.Find(k, c.Param("ruleId"))
	if r == nil {
		failRuleNotFound(c)
		return nil, false
	}
	return r, true
}

func failRuleNotFound(c *gin.Context) {
	fail(c, mautrix.MNotFound.WithMessage("The push rule was not found."))
}

func (a *API) getPushRule(c *gin.Context, sess *storage.Session) {
	if r, ok := a.findPushRule(c, sess); ok {
		c.JSON(http.StatusOK, r)
	}
}

func (a *API) getPushRuleEnabled(c *gin.Context, sess *storage.Session) {
	if r, ok := a.findPushRule(c, sess); ok {
		c.JSON(http.StatusOK, gin.H{"enabled": r.Enabled})
	}
}

func (a *API) getPushRuleActions(c *gin.Context, sess *storage.Session) {
	if r, ok := a.findPushRule(c, sess); ok {
		c.JSON(http.StatusOK, gin.H{"actions": r.Actions})
	}
}

// failRuleInput answers a rule the client sent that is not valid.
func failRuleInput(c *gin.Context, err error) {
	var inv *push.InvalidError
	switch {
	case errors.As(err, &inv) && inv.Missing:
		fail(c, errMissingParam.WithMessage("%s", inv.Msg))
	case errors.As(err, &inv):
		fail(c, mautrix.MBadJSON.WithMessage("%s", inv.Msg))
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("%s", err.Error()))
	}
}

// updatePushRules applies change to the caller's stored rules, stores the
// result with the new m.push_rules account data and wakes their syncs.
func (a *API) updatePushRules(c *gin.Context, sess *storage.Session, change func(rows []storage.PushRule) ([]storage.PushRule, error)) {
	user := sess.UserID
	pos, err := a.db.UpdatePushRules(c.Request.Context(), user, func(rows []storage.PushRule) ([]storage.PushRule, json.RawMessage, error) {
		updated, err := change(rows)
		if err != nil {
			return nil, nil, err
		}
		return updated, push.Assemble(user, updated).AccountDataContent(), nil
	})
	switch {
	case errors.Is(err, push.ErrRuleNotFound):
		failRuleNotFound(c)
	case errors.Is(err, push.ErrRelativeRuleNotFound):
		// The spec's own example answer.
		fail(c, mautrix.MUnknown.WithStatus(http.StatusBadRequest).WithMessage("%s", err.Error()))
	case errors.Is(err, push.ErrDefaultRule), errors.Is(err, push.ErrRelativeToDefault):
		fail(c, mautrix.MInvalidParam.WithMessage("%s", err.Error()))
	case errors.Is(err, push.ErrTooManyRules):
		fail(c, mautrix.MTooLarge.WithMessage("A user may have at most %d push rules", push.MaxUserRules))
	case err != nil:
		a.internalError(c, err)
	default:
		a.wakeForUserData(pos, user)
		c.JSON(http.StatusOK, gin.H{})
	}
}

func (a *API) putPushRule(c *gin.Context, sess *storage.Session) {
	k, ok := kindParam(c)
	if !ok {
		return
	}
	ruleID := c.Param("ruleId")
	if err := push.CheckRuleID(k, ruleID); err != nil {
		failRuleInput(c, err)
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	nr := push.NewRule{Kind: k, RuleID: ruleID, Before: c.Query("before"), After: c.Query("after")}
	var err error
	if nr.Actions, err = push.ParseActions(raw["actions"]); err != nil {
		failRuleInput(c, err)
		return
	}
	switch k {
	case push.KindOverride, push.KindUnderride:
		if nr.Conditions, err = push.ParseConditions(raw["conditions"]); err != nil {
			failRuleInput(c, err)
			return
		}
	case push.KindContent:
		var pattern string
		if raw["pattern"] == nil {
			fail(c, errMissingParam.WithMessage("Content rules need a pattern"))
			return
		} else if json.Unmarshal(raw["pattern"], &pattern) != nil {
			fail(c, mautrix.MBadJSON.WithMessage("pattern must be a string"))
			return
		}
		nr.Pattern = &pattern
	}
	a.updatePushRules(c, sess, func(rows []storage.PushRule) ([]storage.PushRule, error) {
		return push.PutRule(rows, nr)
	})
}

func (a *API) deletePushRule(c *gin.Context, sess *storage.Session) {
	k, ok := kindParam(c)
	if !ok {
		return
	}
	ruleID := c.Param("ruleId")
	a.updatePushRules(c, sess, func(rows []storage.PushRule) ([]storage.PushRule, error) {
		return push.DeleteRule(sess.UserID, rows, k, ruleID)
	})
}

func (a *API) putPushRuleEnabled(c *gin.Context, sess *storage.Session) {
	k, ok := kindParam(c)
	if !ok {
		return
	}
	var req struct {
		Enabled *bool `json:"enabled"`
	}
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	if req.Enabled == nil {
		fail(c, errMissingParam.WithMessage("enabled is required"))
		return
	}
	ruleID := c.Param("ruleId")
	a.updatePushRules(c, sess, func(rows []storage.PushRule) ([]storage.PushRule, error) {
		return push.SetEnabled(sess.UserID, rows, k, ruleID, *req.Enabled)
	})
}

func (a *API) putPushRuleActions(c *gin.Context, sess *storage.Session) {
	k, ok := kindParam(c)
	if !ok {
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	actions, err := push.ParseActions(raw["actions"])
	if err != nil {
		failRuleInput(c, err)
		return
	}
	ruleID := c.Param("ruleId")
	a.updatePushRules(c, sess, func(rows []storage.PushRule) ([]storage.PushRule, error) {
		return push.SetActions(sess.UserID, rows, k, ruleID, actions)
	})
}
