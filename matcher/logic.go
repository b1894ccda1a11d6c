package matcher

// ruleFuncs is what a rule matches: one function for a CloudTrail record,
// one for an ECS document already normalised by Elastic. Both read decoded
// values only. marker is a string every match holds in its request
// parameters: the prefilter searches it.
type ruleFuncs struct {
	marker []byte
	record func(r *record) bool
	ecs    func(d *ecsDoc) bool
}

// legacyMarker is the inline policy AWS put on exposed users before 2020.
var legacyMarker = []byte("AWSExposedCredentialPolicy_DO_NOT_REMOVE")

// newRuleFuncs builds a rule's two functions from the same terms:
// the event names it accepts, whether it wants the call to have failed, and
// the marker its request parameters must contain (Elastic's flattening makes
// "contains in any key or value" the same test on both shapes).
func newRuleFuncs(marker []byte, failed bool, names ...string) *ruleFuncs {
	wanted := func(name string) bool {
		for _, n := range names {
			if name == n {
				return true
			}
		}
		return false
	}
	recordWanted := func(r *record) bool {
		for _, n := range names {
			if r.eventNameIs(n) {
				return true
			}
		}
		return false
	}
	outcome := "success"
	if failed {
		outcome = "failure"
	}
	return &ruleFuncs{
		marker: marker,
		record: func(r *record) bool {
			return recordWanted(r) && r.failed() == failed && r.requestParametersContain(marker)
		},
		ecs: func(d *ecsDoc) bool {
			return d.isCloudTrail() && wanted(d.action) && d.outcome == outcome && containsString(d.requestParameters, marker)
		},
	}
}

var logicByRuleID = map[string]*ruleFuncs{
	// event.action == "AttachUserPolicy" and event.outcome == "success"
	// and stringContains(aws.cloudtrail.request_parameters, "AWSCompromisedKeyQuarantine")
	ElasticQuarantineRule.ID:      newRuleFuncs(marker, false, "AttachUserPolicy"),
	QuarantineAttachFailedRule.ID: newRuleFuncs(marker, true, "AttachUserPolicy"),
	QuarantineDetachedRule.ID:     newRuleFuncs(marker, false, "DetachUserPolicy", "DetachRolePolicy", "DetachGroupPolicy"),
	QuarantineRoleOrGroupRule.ID:  newRuleFuncs(marker, false, "AttachRolePolicy", "AttachGroupPolicy"),
	LegacyInlineQuarantineRule.ID: newRuleFuncs(legacyMarker, false, "PutUserPolicy"),
}

func ruleLogic(r *Rule) *ruleFuncs { return logicByRuleID[r.ID] }
