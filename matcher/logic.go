package matcher

// ruleFuncs is what a rule matches: one function for a CloudTrail record,
// one for an ECS document already normalised by Elastic. Both read decoded
// values only.
type ruleFuncs struct {
	record func(r *record) bool
	ecs    func(d *ecsDoc) bool
}

var logicByRuleID = map[string]*ruleFuncs{
	ElasticQuarantineRule.ID: {
		// event.action == "AttachUserPolicy" and event.outcome == "success"
		// and stringContains(aws.cloudtrail.request_parameters, "AWSCompromisedKeyQuarantine")
		record: func(r *record) bool {
			return r.eventName() == "AttachUserPolicy" && !r.failed() && r.requestParametersContain(marker)
		},
		ecs: func(d *ecsDoc) bool {
			return d.isCloudTrail() && d.action == "AttachUserPolicy" && d.outcome == "success" &&
				containsString(d.requestParameters, marker)
		},
	},
}

func ruleLogic(r *Rule) *ruleFuncs { return logicByRuleID[r.ID] }
