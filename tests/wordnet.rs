//! WordNet's nouns as a topic task, from the fetched data.noun (scripts/fetch-transformer.sh;
//! without it these tests say so and pass, unless SPECDEF_REQUIRE_TRANSFORMER=1).

mod common;

use specdef::data::wordnet::{
    HARMFUL_TOPICS, NOUN_CATEGORIES, UTILITY_TOPICS, category_index, parse_nouns,
};
use specdef::transformer_files::wordnet_dir;

fn data_noun() -> Option<String> {
    let path = wordnet_dir().join("data.noun");
    if !common::fetched(&path) {
        return None;
    }
    Some(std::fs::read_to_string(path).unwrap())
}

#[test]
fn every_noun_synset_is_read_with_its_category_and_gloss() {
    let Some(text) = data_noun() else { return };
    let glosses = parse_nouns(&text).unwrap();
    // WordNet 3.0 has 82,115 noun synsets (its documentation's count).
    assert_eq!(glosses.len(), 82_115);
    let first = &glosses[0];
    assert_eq!(first.offset, 1740);
    assert_eq!(NOUN_CATEGORIES[first.category], "Tops");
    assert!(
        first.text.starts_with("entity: that which is perceived"),
        "{}",
        first.text
    );
    let dog = glosses
        .iter()
        .find(|g| g.text.starts_with("dog: a member of the genus Canis"))
        .unwrap();
    assert_eq!(NOUN_CATEGORIES[dog.category], "animal");
    // Every topic of both default sets is a category with thousands of synsets.
    for topic in UTILITY_TOPICS.iter().chain(&HARMFUL_TOPICS) {
        let c = category_index(topic).unwrap();
        let count = glosses.iter().filter(|g| g.category == c).count();
        assert!(count > 1000, "{topic}: {count} synsets");
    }
    // The fixed split holds out about one in ten, the same synsets every time.
    let test = glosses.iter().filter(|g| g.is_test(10)).count();
    assert!((7_000..9_500).contains(&test), "{test} test synsets");
}

#[test]
fn a_malformed_line_is_refused_with_its_number() {
    let good = "00001740 03 n 01 entity 0 000 | that which exists\n";
    assert_eq!(parse_nouns(good).unwrap().len(), 1);
    let cases = [
        (
            "00001740 03 n 01 entity 0 000 that which exists\n",
            "no gloss",
        ),
        (
            "0000x740 03 n 01 entity 0 000 | gloss\n",
            "offset \"0000x740\" is not a number",
        ),
        (
            "00001740 44 n 01 entity 0 000 | gloss\n",
            "lexicographer file \"44\" is not a noun file",
        ),
        (
            "00001740 03 v 01 entity 0 000 | gloss\n",
            "synset type \"v\"",
        ),
    ];
    for (line, want) in cases {
        let text = format!("  licence header\n{good}{line}");
        let message = parse_nouns(&text).err().unwrap().to_string();
        assert!(
            message.contains("line 3") && message.contains(want),
            "{message}"
        );
    }
}
