package matcher

import "testing"

func TestMayMatch(t *testing.T) {
	for _, c := range []struct {
		name string
		text string
		want bool
	}{
		{"plain record", `{"eventName":"DescribeInstances","requestParameters":{"a":"b"}}`, false},
		{"marker", `{"p":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"}`, true},
		{"marker at the very start", `AWSCompromisedKeyQuarantine`, true},
		{"half a marker", `{"p":"AWSCompromisedKey","q":"Quarantine"}`, false},
		{"Q elsewhere", `{"p":"Quota","q":"AWSCompromisedKeyQ"}`, false},
		{"escape of '='", `{"u":"a\u003db"}`, false},
		{"escape of '&' and of non-ASCII", `{"u":"a\u0026b\u00e9"}`, false},
		{"escape of a marker letter", `{"p":"AWSCompromisedKey\u0051uarantine"}`, true},
		{"escape of a lowercase hex letter", `{"p":"\u0061"}`, true},
		{"escape of a backslash", `{"m":"\u005cu0051"}`, true},
		{"escape of u", `{"m":"\\\u00750051"}`, true},
		{"escaped escape of a marker letter", `{"m":"\\u0051"}`, true},
		{"escape not followed by hex", `{"m":"\\u\u0030051"}`, true},
		{"escape cut short", `{"m":"\u00`, true},
		{"base64 of gzip", `{"awslogs":{"data":"H4sIAAAAAAAA"}}`, true},
		{"base64 of gzip, escaped", `{"awslogs":{"data":"\u00484sIAAAAAAAA"}}`, true},
	} {
		p := newPrefilter([][]byte{marker})
		if got := p.mayMatch([]byte(c.text)); got != c.want {
			t.Errorf("%s: mayMatch(%s) = %v, want %v", c.name, c.text, got, c.want)
		}
	}
}
