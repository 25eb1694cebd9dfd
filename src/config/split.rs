//! A faster parse of configuration files with a large block-style `api_keys` list.
//!
//! The YAML parser builds the event list of a whole document before deserializing it: for
//! 1,000,000 keys (121 MB of YAML) that is seconds of one core and over a gigabyte of memory.
//! This path cuts the text instead: the top-level `api_keys:` block is lifted out, the rest of the
//! file is parsed as usual, and the block is parsed in pieces of whole list items, on every core.
//!
//! It is only an accelerator. It answers `None` — and the caller parses the whole text the usual
//! way — unless every piece parses cleanly and yields exactly the items it was cut at. A cut
//! inside something that spans lines (a quoted or flow scalar, an alias to an anchor elsewhere)
//! leaves an unterminated or unknown construct in a piece, which fails to parse; a block scalar
//! cannot hold a line as little indented as its list. So on success the result is the one the
//! whole-text parse gives (a property the tests check), and errors always come from the
//! whole-text parse, with its messages and positions.

use super::file::{ApiKeyFile, ConfigFile};

/// Items per piece: small enough to spread a large list over the cores and to keep each piece's
/// parser events small, large enough that a piece's setup does not show.
pub(super) const PIECE_ITEMS: usize = 16 * 1024;

/// `text` parsed with the `api_keys` block cut into pieces of `piece_items` items, or `None`
/// when the file does not have the plain shape this needs or when the block has no more than
/// `piece_items` items (the usual parse is as fast then).
pub(super) fn parse(text: &str, piece_items: usize) -> Option<ConfigFile> {
    let block = find_block(text)?;
    if block.items.len() <= piece_items.max(1) {
        return None;
    }
    let rest = [&text[..block.line_start], &text[block.end..]].concat();
    let mut file: ConfigFile = serde_yaml_ng::from_str(&rest).ok()?;
    if !file.api_keys.is_empty() {
        return None;
    }
    // Pieces as (text, items in it).
    let bounds: Vec<(usize, usize)> = block
        .items
        .chunks(piece_items.max(1))
        .map(|c| (c[0], c.len()))
        .collect();
    let pieces: Vec<(&str, usize)> = bounds
        .iter()
        .enumerate()
        .map(|(i, &(start, n))| {
            let end = bounds.get(i + 1).map_or(block.end, |b| b.0);
            (&text[start..end], n)
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8)
        .min(pieces.len());
    let parsed: Vec<Option<Vec<ApiKeyFile>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let pieces = &pieces;
                s.spawn(move || {
                    pieces
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % threads == t)
                        .map(|(i, &(piece, n))| {
                            let keys: Vec<ApiKeyFile> = serde_yaml_ng::from_str(piece).ok()?;
                            (keys.len() == n).then_some((i, keys))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out: Vec<Option<Vec<ApiKeyFile>>> = (0..pieces.len()).map(|_| None).collect();
        for w in workers {
            // A worker that panicked (it should not: serde reports errors) gives no pieces, and
            // the whole-text parse then runs.
            for (i, keys) in w.join().unwrap_or_default().into_iter().flatten() {
                out[i] = Some(keys);
            }
        }
        out
    });
    let mut keys = Vec::with_capacity(block.items.len());
    for p in parsed {
        keys.extend(p?);
    }
    file.api_keys = keys;
    Some(file)
}

/// The top-level `api_keys:` block of a file.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    /// Where the `api_keys:` line starts.
    line_start: usize,
    /// Where each list item (`- …` at the list's indentation) starts.
    items: Vec<usize>,
    /// Where the block ends: the next line less indented than its items, or the end of the text.
    end: usize,
}

/// Finds the block, if the file has the plain shape: one top-level `api_keys:` line (a comment
/// may follow) with a block list under it, no other document markers, directives or top-level
/// keys written in quotes, flow or complex form, and no tabs in the indentation of the block.
fn find_block(text: &str) -> Option<Block> {
    let mut lines = Lines { text, pos: 0 };
    let mut line_start = None;
    let mut seen_content = false;
    // The top level, up to the `api_keys:` line.
    for (start, line) in lines.by_ref() {
        if line.starts_with([' ', '#']) || line.trim_end().is_empty() {
            continue;
        }
        if line.trim_end() == "---" && !seen_content {
            seen_content = true;
            continue;
        }
        seen_content = true;
        if !top_level_key_is_plain(line) {
            return None;
        }
        if is_api_keys(line) {
            let after = line["api_keys".len()..].trim_end();
            if after == ":" || (after.starts_with(':') && after[1..].trim_start().starts_with('#'))
            {
                line_start = Some(start);
                break;
            }
            return None;
        }
    }
    let line_start = line_start?;
    // The block: the list's indentation is that of its first item.
    let mut indent = None;
    let mut items = Vec::new();
    let mut end = text.len();
    for (start, line) in lines.by_ref() {
        let content = line.trim_start_matches(' ');
        if content.trim_end().is_empty() || content.starts_with('#') {
            continue;
        }
        if content.starts_with('\t') {
            return None;
        }
        let n = line.len() - content.len();
        let is_item = content.starts_with("- ") || content.trim_end() == "-";
        match indent {
            None if is_item => indent = Some(n),
            None => return None,
            Some(i) if n < i || (n == i && !is_item && i == 0) => {
                // The next top-level key (a line indented less, but not to column 0, is not YAML
                // this scan vouches for).
                if n > 0 || !top_level_key_is_plain(line) || is_api_keys(line) {
                    return None;
                }
                end = start;
                break;
            }
            Some(i) if n == i && !is_item => return None,
            Some(_) => {}
        }
        if Some(n) == indent && is_item {
            items.push(start);
        }
    }
    // Nothing after the block may be another `api_keys` (a duplicate key is an error that the
    // whole-text parse reports) or something this scan does not understand.
    for (_, line) in lines {
        if line.starts_with([' ', '#']) || line.trim_end().is_empty() {
            continue;
        }
        if !top_level_key_is_plain(line) || is_api_keys(line) {
            return None;
        }
    }
    Some(Block {
        line_start,
        items,
        end,
    })
}

/// A top-level line with the key `api_keys` (not `api_keys_files`).
fn is_api_keys(line: &str) -> bool {
    line.strip_prefix("api_keys")
        .is_some_and(|r| r.is_empty() || r.starts_with([':', ' ', '\t', '\r']))
}

/// A top-level line that starts with a plain key: no document marker, directive, quoted key,
/// flow collection, complex key, anchor, alias, tag or list item.
fn top_level_key_is_plain(line: &str) -> bool {
    !line.starts_with([
        '-', '.', '%', '"', '\'', '{', '[', '?', '&', '*', '!', '|', '>', '@', '`', '\t',
    ])
}

/// Lines with the byte offset each starts at (the line without its `\n`; a `\r` stays).
struct Lines<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let len = rest.find('\n').unwrap_or(rest.len());
        self.pos = start + len + 1;
        Some((start, &rest[..len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Option<String> {
        serde_yaml_ng::from_str::<ConfigFile>(text)
            .ok()
            .map(|f| format!("{f:?}"))
    }

    /// The split parse, when it answers, equals the whole-text parse.
    fn agrees(text: &str) -> bool {
        match parse(text, 1) {
            Some(f) => whole(text) == Some(format!("{f:?}")),
            None => true,
        }
    }

    const HEAD: &str = "version: 1\nusage_plans:\n  gold: {}\n";

    #[test]
    fn a_plain_list_is_split_and_equals_the_whole_parse() {
        for list in [
            "api_keys:\n  - { id: a, usage_plans: [gold] }\n  - id: b\n    name: B\n  - { id: c }\n",
            "api_keys:\n- id: a\n- id: b\n  enabled: false\n- { id: c }\n",
            "api_keys: # the keys\n  # first\n  - id: a\n\n  - id: b # two\n# a comment at column 0\n  - id: c\n",
            "api_keys:\n  - id: a\n    description: |\n      one\n      two\n  - id: b\n    description: \"a\n      b\"\n  - id: c\n",
        ] {
            let text = format!("{HEAD}{list}api_keys_files: []\n");
            let f = parse(&text, 1).unwrap_or_else(|| panic!("not split: {text}"));
            assert_eq!(whole(&text), Some(format!("{f:?}")), "{text}");
            assert_eq!(f.api_keys.len(), 3);
            // …and with the block last in the file, and after a document marker.
            let text = format!("---\n{HEAD}{list}");
            assert!(parse(&text, 2).is_some(), "{text}");
            assert!(agrees(&text));
        }
    }

    #[test]
    fn what_it_cannot_cut_safely_is_left_to_the_whole_parse() {
        for text in [
            // A quoted scalar whose continuation looks like an item.
            "version: 1\napi_keys:\n  - id: \"a\n  - b\"\n  - id: c\n",
            // Aliases to anchors in another piece or outside the block.
            "version: 1\napi_keys:\n  - &k { id: a }\n  - *k\n  - id: c\n",
            "version: 1\nx: &p [gold]\napi_keys:\n  - { id: a, usage_plans: *p }\n  - id: b\n",
            // A flow list spread over lines.
            "version: 1\napi_keys:\n  - [\n  - id: a]\n  - id: b\n",
            // A duplicate api_keys key, an inline list, a quoted key, a second document.
            "version: 1\napi_keys:\n  - id: a\n  - id: b\napi_keys:\n  - id: c\n",
            "version: 1\napi_keys: [{ id: a }, { id: b }]\n",
            "version: 1\n\"api_keys\":\n  - id: a\n  - id: b\n",
            "version: 1\napi_keys:\n  - id: a\n  - id: b\n---\nversion: 1\n",
            // Not a list, a tab, a bad item.
            "version: 1\napi_keys:\n  id: a\n",
            "version: 1\napi_keys:\n\t- id: a\n\t- id: b\n",
            "version: 1\napi_keys:\n  - id: a\n  - { id: b, nope: 1 }\n",
            "version: 1\napi_keys:\n  - id: a\n  - id: b\n  x: 1\n",
        ] {
            assert!(parse(text, 1).is_none(), "split: {text}");
        }
    }

    #[test]
    fn small_lists_take_the_usual_path() {
        let text = format!("{HEAD}api_keys:\n  - id: a\n  - id: b\n");
        assert!(parse(&text, 2).is_none());
        assert!(parse(&text, 1).is_some());
    }

    #[test]
    fn any_cut_of_generated_files_agrees_with_the_whole_parse() {
        // Every way to write the items this test knows, in every order, cut every way.
        let items = [
            "- { id: a, usage_plans: [gold] }",
            "- id: b\n  name: \"x\n   - y\"",
            "-\n  id: c",
            "- id: d # c\n  # c\n  enabled: false",
            "- id: e\n  description: >\n    - folded\n    text",
            "- { id: f,\n    name: g }",
            "- id: 'h\n  - i'",
        ];
        let mut split = 0;
        for indent in ["", "  ", "    "] {
            for rot in 0..items.len() {
                let mut list = String::new();
                for i in 0..items.len() {
                    for line in items[(i + rot) % items.len()].lines() {
                        list.push_str(indent);
                        list.push_str(line);
                        list.push('\n');
                    }
                }
                for n in 1..=3 {
                    for tail in ["", "api_keys_files: []\n"] {
                        let text = format!("{HEAD}api_keys:\n{list}{tail}");
                        if let Some(f) = parse(&text, n) {
                            assert_eq!(whole(&text), Some(format!("{f:?}")), "{text}");
                            split += 1;
                        }
                    }
                }
            }
        }
        // Most cuts fall between items and are taken; the others fell back.
        assert!(split > 20, "{split} files split");
    }
}
