package producer

import (
	"cmp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// description is what an event did, in words: the alert's message, and
// OCSF's finding_info.title and desc. Every word comes from the event (the
// call, its outcome, its target and policy), never from the rule, so that a
// companion rule's finding on DetachRolePolicy says "detached ... from IAM
// role", not what the Elastic rule looks for.
type description struct {
	// Message is one line: who did what to which identity, in which
	// account, with the event name and error code, e.g. "AWS attached
	// AWSCompromisedKeyQuarantineV2 to IAM user test-user in account
	// 123456789012 (AttachUserPolicy)".
	Message string
	// Title is what happened without who or where, e.g.
	// "AWSCompromisedKeyQuarantineV2 attached to IAM user test-user".
	Title string
	// Desc is Message with the error message as well as the error code.
	Desc string
}

// policyCall is what an IAM policy call does, read from its event name.
type policyCall struct {
	verb, past, prep string // "attach", "attached", "to"
	// inline: the call puts or deletes an inline policy, named by
	// policyName, rather than attaching a managed one.
	inline bool
}

// policyCallOf reads the call from the event name: Attach*Policy,
// Detach*Policy, Put*Policy and Delete*Policy are the IAM calls that give
// or take an identity's permissions; any other name is told as it is.
func policyCallOf(eventName string) policyCall {
	switch {
	case strings.HasPrefix(eventName, "Attach"):
		return policyCall{verb: "attach", past: "attached", prep: "to"}
	case strings.HasPrefix(eventName, "Detach"):
		return policyCall{verb: "detach", past: "detached", prep: "from"}
	case strings.HasPrefix(eventName, "Put"):
		return policyCall{verb: "put", past: "put", prep: "on", inline: true}
	case strings.HasPrefix(eventName, "Delete"):
		return policyCall{verb: "delete", past: "deleted", prep: "from", inline: true}
	}
	return policyCall{}
}

// describe puts the event into words. Every part comes from the record,
// which anyone able to write to the input topic controls, so control
// characters are replaced to keep each text on one line.
func describe(e *matcher.Event) description {
	call := policyCallOf(e.EventName)
	policy := policyLabel(e)
	if call.inline {
		policy = "inline policy " + cmp.Or(e.PolicyName, policy)
		if e.PolicyName == "" && e.PolicyARN == "" {
			policy = "an inline policy"
		}
	}
	target := targetLabel(e)
	failed := e.Outcome == "failure"

	var what, title string // what follows the actor in the message
	switch {
	case call.verb == "":
		// Not a policy call: say which call it was, and what it named.
		what, title = "called "+cmp.Or(e.EventName, "an unknown action"), cmp.Or(e.EventName, "Unknown action")+" called"
		if failed {
			what, title = "failed to call "+cmp.Or(e.EventName, "an unknown action"), "Failed to call "+cmp.Or(e.EventName, "an unknown action")
		}
		if e.PolicyARN != "" || e.PolicyName != "" {
			what, title = what+" with "+policy, title+" with "+policy
		}
		if e.TargetKind != "" {
			what, title = what+" on "+target, title+" on "+target
		}
	case failed:
		what = "failed to " + call.verb + " " + policy + " " + call.prep + " " + target
		title = "Failed to " + call.verb + " " + policy + " " + call.prep + " " + target
	default:
		what = call.past + " " + policy + " " + call.prep + " " + target
		title = upperFirst(policy) + " " + call.past + " " + call.prep + " " + target
	}
	sentence := actor(e) + " " + what
	if acct := cmp.Or(e.RecipientAccountID, e.UserIdentity.AccountID); acct != "" {
		sentence += " in account " + acct
	}
	event := cmp.Or(e.EventName, "unknown action")
	message, desc := sentence+" ("+event, sentence+" ("+event
	if failed {
		if reason := cmp.Or(e.ErrorCode, e.ErrorMessage); reason != "" {
			message += ": " + reason
		}
		for _, s := range []string{e.ErrorCode, e.ErrorMessage} {
			if s != "" {
				desc += ": " + s
			}
		}
	}
	return description{Message: oneLine(message + ")"), Title: oneLine(title), Desc: oneLine(desc + ")")}
}

// targetLabel names the identity the call acted on, e.g. "IAM role
// web-app"; its kind from the event name when the request named none.
func targetLabel(e *matcher.Event) string {
	kind := e.TargetKind
	if kind == "" {
		for _, k := range []struct{ infix, kind string }{
			{"UserPolic", matcher.TargetUser}, {"RolePolic", matcher.TargetRole}, {"GroupPolic", matcher.TargetGroup},
		} {
			if strings.Contains(e.EventName, k.infix) {
				kind = k.kind
			}
		}
	}
	if kind == "" {
		return "an unknown IAM identity"
	}
	return "IAM " + kind + " " + cmp.Or(e.TargetName, "(unknown)")
}

// actor names the caller: "AWS" when the user agent is the one AWS uses
// for its own calls (the quarantine is applied this way), else the
// caller's ARN or at least its identity type.
func actor(e *matcher.Event) string {
	if e.UserAgent == "AWS Internal" || strings.HasPrefix(e.UserAgent, "aws-internal/") {
		return "AWS"
	}
	return cmp.Or(e.UserIdentity.ARN, e.UserIdentity.Type, "an unknown caller")
}

// policyLabel is the policy's name: the last part of its ARN, or the
// inline policy's name.
func policyLabel(e *matcher.Event) string {
	name := e.PolicyARN[strings.LastIndexByte(e.PolicyARN, '/')+1:]
	return cmp.Or(name, e.PolicyName, "a policy")
}

func upperFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

// oneLine replaces control characters and the Unicode line and paragraph
// separators with spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
}
